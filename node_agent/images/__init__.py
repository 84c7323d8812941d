"""The images Skiff builds itself (no registry is needed): ``skiff/pause`` and ``skiff/app``."""
