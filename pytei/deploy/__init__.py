"""Deploying what pytei built: base images from Debian's packages, runtime images through the
Docker SDK, compose projects behind a balancer and Kubernetes bases, all rendered from the same
``pytei.yaml`` that ``pytei serve -c`` reads."""
