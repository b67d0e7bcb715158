"""The devices every op test runs on: the one list to extend when a backend lands."""

DEVICES = ["cpu"]
