"""The outbound edge: NGSI-LD notifications to departments' endpoints."""
