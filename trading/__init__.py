"""The composition root: the `trading` CLI, the one-process host and OpenAPI generation.

It sits above every service and the gateway and is the only package that may import them
all. Services are found by convention (`services/<name>/app.py:create_app`), never listed.
"""
