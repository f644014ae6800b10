"""The operator (``modelservice run``): kopf handlers, a watch cache, a level-triggered reconcile queue.

Modules, from the outside in:

- ``main``: ``run_operator`` (the CLI's entry point) and ``operate`` (tests run it in a thread).
- ``handlers``: kopf registration only. Login (service account or kubeconfig; the operator's client reuses the
  credentials), index handlers that feed the cache from the labelled children's watch streams (kopf holds every
  other handler until their initial listing is in), event handlers on ModelServices and children that add the
  owning ModelService to the queue, startup/cleanup, a liveness probe.
- ``queue``: one reconcile per ModelService at a time, triggers merged, exponential backoff for ``Retry``,
  nothing for ``Done(stalled=True)`` (invalid spec, failed conversion, a child the cluster refuses) until the
  next change or the periodic resync.
- ``reconcile``: parse (``api.loader.parse``), observe, ``render.children``, apply, compute the status, write it
  when it changed, post an Event when the phase changed.
- ``observe`` (reads: the cache; the conversion pod's termination message once per finished Job) and ``apply``
  (writes: create when missing, patch only differing owned fields, delete what the spec no longer asks for,
  the status subresource, Events) are the only modules that talk to the API, through ``client``.
- ``status``: the status as one pure function of what was observed.

Why not kopf's create/update handlers: they persist progress and a diff base in annotations (an extra write per
object and per change) and run per object, while a ModelService must also react to its children. Watch events
only enqueue the owner here, and a reconcile that finds nothing to do sends no request at all.
"""
