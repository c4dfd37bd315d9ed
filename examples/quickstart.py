"""The README's Quickstart app (tests/test_docs.py keeps the two the same)."""

from flask import Flask
from flask_rtbroker import RealtimeBroker

app = Flask(__name__)
broker = RealtimeBroker(app)          # or RealtimeBroker(); broker.init_app(app)

@app.post("/hello")
def hello():
    delivered = broker.notify("example", {"test": 123})   # every subscriber of "example"
    return {"delivered": delivered}
