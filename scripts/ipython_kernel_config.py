# Copied by scripts/setup.sh to .venv/etc/ipython/, where IPython reads it (sys.prefix): the
# notebook kernels of this environment log errors only. Otherwise papermill and nbval print
# ipykernel's "Kernel is running over TCP without encryption" warning once per notebook (the
# kernel listens on localhost only).
c.IPKernelApp.log_level = "ERROR"  # noqa: F821
