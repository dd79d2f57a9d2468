"""A real autoscaler process (tools.autoscale's main: settings read from the
inventory by ansible-runner, the lock, the journal, the state, the decision loop,
the StatsD metrics) with the two parts that need the lab replaced:

- the actuator appends each call as a JSON line to $STUB_CALLS and, when its
  name is $STUB_PAUSE_IN, then sleeps 120 s (the test kills the process there);
- when its name is $STUB_FAIL_IN, it raises PlaybookFailed after recording, once
  (as a failed playbook would);
- every host's utilisation is $STUB_UTILISATION (a float).

    python stub_autoscaler.py [autoscaler options]
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools.autoscale.__main__ import main  # noqa: E402
from tools.autoscale.actuate import PlaybookFailed  # noqa: E402


class RecordingActuator:
    def __init__(self, ansible, provision_playbook, deprovision_playbook):
        pass

    def record(self, call, host, in_service):
        with open(os.environ["STUB_CALLS"], "a") as calls:
            calls.write(json.dumps({"call": call, "host": host, "in_service": in_service, "pid": os.getpid()}) + "\n")
        if os.environ.get("STUB_PAUSE_IN") == call:
            time.sleep(120)
        if os.environ.get("STUB_FAIL_IN") == call:
            os.environ["STUB_FAIL_IN"] = ""
            raise PlaybookFailed(f"{call} of {host}: the stub's failure")

    def scale_out(self, host, in_service):
        self.record("scale_out", host, in_service)

    def scale_in(self, host, in_service):
        self.record("scale_in", host, in_service)


def read_utilisation(hosts):
    value = float(os.environ["STUB_UTILISATION"])
    return dict.fromkeys(hosts, value), {}


if __name__ == "__main__":
    sys.exit(main(build_actuator=RecordingActuator, read_utilisation=read_utilisation))
