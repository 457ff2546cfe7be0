"""Sub-commands of the ``astroclip`` command line (see `astroclip.cli`)."""
