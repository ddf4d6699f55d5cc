"""Sweeps: a spec's trials (emodist.sweep.spec), each a normal run directory under one sweep directory, run in
sequence or as a SLURM job array (emodist.sweep.runner). launch/sweep.py is the command line."""
