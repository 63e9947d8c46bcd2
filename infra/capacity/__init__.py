"""One pod's capacity and the autoscaling planned from it (`make plan`): the measured record
(capacity.json, read by infra/config.py's stack check), the SLO search that measures it, the HPA
controller model and the deployment simulation, the planner CLI (`python -m infra.capacity.plan`).

They live here, not in bench/, because the deployment reads the record and the planner sets the
stack's autoscaling targets: deployment code depends on nothing in bench/. The load-testing parts
the measurement needs (load generator, step statistics, the server as a child process) live here
too, and the benchmark imports them from here.
"""
