"""The run directory, the one place a run lives on disk: what a start, a resume or an overwrite may do with
the files already there (`contract`), the resumable checkpoints in it (`checkpoints`: saved whole or not at
all, verified before they are trusted, refused in one line when they do not fit), which of them a run keeps
(`timeline`) and the lock that keeps one launch per directory (`lock`).

Imports `emodist.config` and `emodist.runtime`. A user who trains for hours must never lose a run: every
decision here names what it does with the files that are there, and refuses rather than guesses.
"""
