"""The run report: the RunReport component, its inputs, HTML and figures."""
