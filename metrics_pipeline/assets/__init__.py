"""What every family's assets share (each family builds its own assets in its folder:
``datapump/assets/``, ``availability/assets.py``, ``collected/assets.py``)."""
