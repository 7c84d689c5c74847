"""Soft EPICS IOCs (pythonSoftIOC) that the device tests start as subprocesses."""
