"""The foundation every Hearthlink service is built on, one module per concern.

- :mod:`.app`: the FastAPI app every service starts from (``/health``, error handlers);
- :mod:`.errors`: the ``{"error", "detail"}`` answers and the start-up configuration error;
- :mod:`.auth`: the bearer token and the dependency that checks it;
- :mod:`.body_limit`: the 1 MiB request body limit, chunked or not;
- :mod:`.validation`: names, message length and the JSON content type;
- :mod:`.settings`: the service's data folder and numbers from the environment;
- :mod:`.database`: the SQLite helper, and running blocking calls off the event loop;
- :mod:`.outbound`: the httpx client for calls to other services;
- :mod:`.launcher`: the one command line (``--host/--port``) every service runs under.

Nothing is re-exported here: the launcher is imported before FastAPI, and must stay light.
"""
