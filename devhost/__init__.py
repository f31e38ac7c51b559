"""A thin local host for function_app.py (Functions Core Tools cannot be installed here).

It loads the functions from the app's own registrations (`app.get_functions()`), resolves
`%SETTING%` names from local.settings.json, and drives each trigger type with a driver
(HTTP, Cosmos DB, timer and queue triggers: `runner.DRIVERS`). In Azure the real
host runs the same function_app.py; nothing here is imported by the app.
"""
