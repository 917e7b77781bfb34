"""One benchmark point: its configuration and keys (:mod:`~vlamix.pipeline.config`), the environment checks
(:mod:`~vlamix.pipeline.checks`), train -> save -> load -> predict (:mod:`~vlamix.pipeline.point`), racing for the
evaluation budget (:mod:`~vlamix.pipeline.racing`), DoReMi's dependent runs (:mod:`~vlamix.pipeline.reference`) and
the job ledger through which points see each other (:mod:`~vlamix.pipeline.ledger`)."""
