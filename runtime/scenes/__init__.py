"""Scenes for the demo, evaluation and training: Panda3D renders (panda_source) and camera paths (paths)."""
