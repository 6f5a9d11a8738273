"""The HTTP side of the registry: the WSGI app and its routes (simple index, files,
uploads, the JSON API and its OpenAPI document, catalog, metrics), and the gunicorn server
and worker that run it."""
