"""The picture of a call: a recording drawn as one zoomable HTML page (or a PNG of it).

timeline.py works out what happened from the recording (pure), figure.py draws it with plotly, render.py writes
the page and shoots the PNG, cli.py is `bargein report`; GET /calls/{id}/report is app/routes/report.py.
"""
