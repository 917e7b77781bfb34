"""Beyond the grid: adaptive mixture search (Optuna) and mixture regression.

    vlamix.search.simplex     uniform parametrisation of the simplex, lattice grids
    vlamix.search.optimize    search_simplex (TPE / GP / random), SearchTrace, grid_comparison
    vlamix.search.job         the search as a job (``vlamix search -f job.yaml [--backend ray]``)
    vlamix.search.regression  quadratic mixture regression (``vlamix suggest -f job.yaml``)
    vlamix.pipeline.racing      racing for the evaluation budget (hyperparameter ``racing: true``)
"""
