"""The serving stage: router processes, named services, health, ports, spawning and logs.

Named ``serving`` (not ``serve``) so that :func:`pytei.serve`, the public function, is not
shadowed by a subpackage.
"""
