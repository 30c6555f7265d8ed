"""The studies: applications built on the simulator (``python -m engine reproduce ...`` and ``bench``).

They queue or train ordinary runs and turn them into tables and plots; the simulator's core
(config, data, models, state, round, techniques, trainer) never imports them.
"""
