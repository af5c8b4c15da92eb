"""The shipped Orthanc configuration and routing script, and a way to run them locally."""
