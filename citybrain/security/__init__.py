"""The platform watching itself: traffic, authentication, devices, personal data, grants."""
