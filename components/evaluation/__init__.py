"""Whether a candidate may replace the served model: the Evaluator, its gates, paired test and baseline."""
