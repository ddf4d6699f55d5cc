"""The process emodist runs in, under every other layer: errors and exit codes (said once for all ranks),
process-wide settings, signals, host memory, the hub probe, and the files it writes atomically or keeps in
its cache.

Imports nothing else of emodist: every package above may import it.
"""
