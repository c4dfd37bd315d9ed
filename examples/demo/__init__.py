"""The live counter demo (``examples.demo.app:app``); see app.py."""
