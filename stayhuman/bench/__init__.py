"""`stayhuman bench`: StayHuman's throughput and latency beside raw JetStream on the same machine.

It starts its own nats-server, database and services on free ports in a temporary folder,
drives them, prints a table and writes the figures as JSON. It asserts nothing: machines
are noisy, so it reports what it measured, the targets and which were met.
"""
