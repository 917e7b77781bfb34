"""The console shows progress and vlamix's warnings; everything else goes to the job's log file (issue 24)."""

import io
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from vlamix.core import console

PKG = os.path.join(os.path.dirname(__file__), "..", "examples", "cloud_VLA_finetune")


def _record(name, level, msg, **extra):
    record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_the_console_filter_keeps_progress_and_vlamix_warnings_only():
    quiet, loud = console.ConsoleFilter(), console.ConsoleFilter(verbose=True)
    cases = [
        (_record("vlamix.data.mixture", logging.INFO, "filter kept 184 of 184"), False, True),
        (_record("vlamix.bench.job", logging.INFO, "point 2/4", console=True), True, True),
        (_record("vlamix.bench.metrics", logging.WARNING, "a real problem"), True, True),
        (_record("absl", logging.INFO, "Constructing tf.data.Dataset"), False, True),
        (_record("robosuite_logs", logging.WARNING, "No private macro file found!"), False, True),
        (_record("absl", logging.DEBUG, "debug chatter"), False, False),
    ]
    for record, shown, shown_verbose in cases:
        assert quiet.filter(record) is shown, record.getMessage()
        assert loud.filter(record) is shown_verbose, record.getMessage()


def test_say_reaches_a_console_handler_and_warnings_carry_their_level(caplog):
    stream = io.StringIO()
    handler = console.console_handler(stream=stream)
    log = logging.getLogger("vlamix")
    log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="vlamix"):
            console.say("point %d/%d  %s", 2, 4, "static spatial:object=1:1")
            logging.getLogger("vlamix.data").info("not for the console")
            logging.getLogger("vlamix.eval").warning("3 episodes errored")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["point 2/4  static spatial:object=1:1", "WARNING: 3 episodes errored"]


def test_progress_off_a_terminal_prints_a_line_per_quarter(caplog):
    with caplog.at_level(logging.INFO, logger="vlamix"):
        bar = console.progress(8, "rollouts", "episodes")
        assert not hasattr(bar, "refresh")  # a pytest capture is not a terminal: milestone lines, no tqdm
        for i in range(8):
            bar.set_postfix(successes=i // 2)
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records if getattr(r, "console", False)]
    assert lines == ["rollouts: 2/8 episodes (successes 0)", "rollouts: 4/8 episodes (successes 1)",
                     "rollouts: 6/8 episodes (successes 2)", "rollouts: 8/8 episodes (successes 3)"]
    resumed = console.progress(10, "training", "steps", initial=7)
    with caplog.at_level(logging.INFO, logger="vlamix"):
        caplog.clear()
        resumed.update(3)
    assert [r.getMessage() for r in caplog.records] == ["training: 10/10 steps"]


def _run(code, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k not in (console.LOG_FILE_ENV, console.VERBOSE_ENV)}
    env.update({"PYTHONPATH": os.path.abspath(PKG)}, **(extra_env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("with_log_file", [True, False])
def test_a_quiet_worker_sends_python_and_c_level_output_to_the_log_file(tmp_path, with_log_file):
    log = tmp_path / "job.log"
    env = {console.LOG_FILE_ENV: str(log)} if with_log_file else {}
    proc = _run("""
        import os, sys
        from vlamix.core.console import quiet_worker
        quiet_worker()
        print("python print")
        os.write(2, b"c-level write\\n")
    """, env)
    assert proc.returncode == 0, proc.stderr
    if with_log_file:
        assert proc.stdout == "" and proc.stderr == ""
        assert "python print" in log.read_text() and "c-level write" in log.read_text()
    else:  # no job log file: nothing is hidden
        assert "python print" in proc.stdout and "c-level write" in proc.stderr


def test_a_command_keeps_its_console_lines_and_logs_the_rest(tmp_path):
    log = tmp_path / "logs" / "job.log"
    proc = _run(f"""
        import logging, os
        from vlamix.core import console
        console.setup_console({str(log)!r})
        console.say("point 1/2  static")
        logging.getLogger("vlamix.data").info("filter kept 5 of 5")
        logging.getLogger("absl").warning("tf.data chatter")
        print("a library's print")
        os.write(2, b"c-level banner\\n")
        logging.getLogger("vlamix.bench").warning("a point failed")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["point 1/2  static", "WARNING: a point failed"]
    text = log.read_text()
    for line in ("filter kept 5 of 5", "tf.data chatter", "a library's print", "c-level banner", "point 1/2", "a point failed"):
        assert line in text


def test_robosuite_banners_are_silenced_at_the_source():
    code = """
        {silence}
        import robosuite
        print(robosuite.__version__)
    """
    loud = _run(code.format(silence=""))
    quiet = _run(code.format(silence="from vlamix.core.console import silence_simulator_banners; silence_simulator_banners()"))
    assert loud.returncode == quiet.returncode == 0
    assert "No private macro file found" in loud.stdout + loud.stderr  # the check can fail
    assert "macro" not in quiet.stdout + quiet.stderr and quiet.stdout.strip() == "1.4.0"
