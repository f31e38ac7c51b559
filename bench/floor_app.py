"""The local runner's floor: a function app whose one HTTP function, at the same route as the service's
`POST /events`, reads the body and answers a fixed 201 of the service's shape, doing nothing else.
`bench.runner_share` serves it in the runner beside the real app to tell the runner's own cost per
request (HTTP, the Functions types, the invocation) from the app's."""
from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# The size and headers of a real single POST's answer (an accepted event, one destination).
_ANSWER = (b'{"index":0,"status":"accepted","eventId":"0193d6f2-7f9c-7141-aed0-af0e1862bd7d",'
           b'"tenantId":"single-1","destinations":[{"destination":"redis","status":"delivered",'
           b'"ref":"1733630000000-0","transient":false}],"errors":[],'
           b'"correlationId":"0193d6f2-7f9c-7141-aed0-af0e1862bd7e"}')


@app.function_name("publish_event")
@app.route(route="events", methods=["POST"])
async def publish_event(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    req.get_body()
    return func.HttpResponse(_ANSWER, status_code=201, mimetype="application/json", charset="utf-8",
                             headers={"x-correlation-id": "0193d6f2-7f9c-7141-aed0-af0e1862bd7e"})
