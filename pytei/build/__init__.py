"""The build stage: hardware -> profile -> plan -> cargo -> installed artifact + manifest.

- :mod:`~pytei.build.hardware`, :mod:`~pytei.build.profiles`: what this machine is and which
  build fits it;
- :mod:`~pytei.build.toolchain`, :mod:`~pytei.build.gitsources`, :mod:`~pytei.build.linklibs`:
  the tools, git sources and native libraries a build needs;
- :mod:`~pytei.build.plan`: everything ``pytei build`` will do (``--dry-run`` prints it);
- :mod:`~pytei.build.cargo`, :mod:`~pytei.build.execute`: running the plan;
- :mod:`~pytei.build.manifest`, :mod:`~pytei.build.installs`: what was built, typed, and
  where it is (the one thing later stages read);
- :mod:`~pytei.build.doctor`: what a build would need here.
"""
