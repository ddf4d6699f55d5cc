"""Scores of multi-label predictions: the metrics (`metrics`) and the decision thresholds tuned on dev
(`thresholds`). Pure functions over numpy arrays; imports `emodist.runtime` only.
"""
