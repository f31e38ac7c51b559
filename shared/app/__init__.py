"""The composition root: the service container, the jobs the triggers run, the library facade."""
