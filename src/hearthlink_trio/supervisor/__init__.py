"""The supervisor: nurseries and signals (``supervisor``), runners (``runner``), one process's
life (``incarnation``), states (``state``), policy, reload plans, status and event lines.

It never imports a service's stack (FastAPI, uvicorn, cryptography) and names no service:
what a service needs is declared in its config table.
"""
