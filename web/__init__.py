"""The draw-a-digit page and the small app that serves it: a client of the model server's REST API."""
