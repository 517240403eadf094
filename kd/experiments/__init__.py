"""One module per paper notebook: the trainings it needs, as plain Python.

Each module defines `teacher_names(P, sec)` (the params.yaml teachers it uses) and
`configs(P, sec)` (every TrainConfig it trains, teachers' configs nested), so that
`python -m kd run-many --paper <paper>` can run a notebook's trainings on a GPU machine
without Jupyter; the notebook then finds them in the run cache. Analysis helpers that
a notebook needs beyond `kd.report` live here too.
"""
