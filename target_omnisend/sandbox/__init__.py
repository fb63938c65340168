"""An Omnisend-compatible API server for offline tests, demos and rehearsals.

``SandboxServer`` (``server.py``) serves the 2026-03-15 API under ``/api`` and v5 under
``/v5`` on loopback; ``SandboxSettings`` (``settings.py``) holds every limit, switch and
fault. Admin endpoints (no auth, not rate limited, not counted): ``GET /_sandbox/health``,
``GET /_sandbox/dump``, ``GET|POST /_sandbox/config`` (JSON object of settings to change),
``POST /_sandbox/reset``.

Dump format (``SandboxServer.dump()`` and ``GET /_sandbox/dump``)::

    {
      "contacts": [{"id", "identifiers": [{"type", "id",
                      "channels": {"email"|"sms": {"status", "statusChangedAt"}}, "consent"?}],
                    "firstName", "lastName", ..., "tags": [...], "customProperties": {...},
                    "createdAt", "updatedAt"}],          # oldest first, 2026 field names
      "welcome_messages": [{"contactID", "type", "id", "at", "newIdentifier"}],
      "ignored_identifiers": [{"type", "id", "ownerID", "at"}],
      "requests": {"POST /api/batches": {"201": 3}, ...},   # route templates, admin excluded
      "requests_total": N, "rate_limited": N,
      "faults_injected": {"drop"|"error"|"slow": N},
      "batches": [{"batchID", "status", "totalCount", "errorsCount", "finishedCount",
                   "endpoint", "generation"}],
      "segments": [{"segmentID", "name", "conditionGroups", "status", ...}],
      "tag_operations": [{"action": "add"|"remove", "tags", "applied", "skipped", "at"}],
      "skipped_tag_emails": [...],
      "settings": {...}, "dumped_at": <unix time>
    }

Time: every duration the sandbox enforces (rate windows, batch/tag/segment delays) is in
sandbox seconds, divided by ``time_scale``; every time it reports (``retryAfter``,
``Retry-After``, ``X-Rate-Limit-Reset``) is in wall seconds. ``slow_seconds`` is wall seconds.
"""
