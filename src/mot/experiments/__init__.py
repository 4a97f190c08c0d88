"""Applications built from the library: ``mot compare`` (experiment configs, training each
architecture, reports, sample grids). Import from the submodules."""
