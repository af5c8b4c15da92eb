"""The PACS gateway: a DICOM SCP that queues every received chest radiograph durably, triages
it in-process and sends the results back to the configured destinations.

One job per module: `config` (AE titles, ports, destinations, credentials, TLS), `queue`
(received files and the SQLite job queue), `inspection` (what an instance must be to be taken
in), `intake` (the one door into the queue), `scp` (C-ECHO, C-STORE), `catchup` (following
Orthanc's change log), `worker` (triage and delivery steps), `sender` (C-STORE, STOW-RS,
webhook), `fhir` (the webhook's DiagnosticReport), `worklist` (study priorities), `gateway`
(the running whole), `logs` (logging without patient data), `cli` (`clinassist gateway`), and
the HTTP handlers `worklist_api` and `admin_api`. `orthanc/` holds Orthanc's configuration and
routing.
"""
