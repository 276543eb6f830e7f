"""The runtime, by layer, each importing only those before it (CI checks it, see pyproject.toml):
broker -> store -> app, client -> runtime -> monitoring -> ops -> cli."""
