"""One router per resource: `system` (health), `recognition` (verify, identify), `people` (enroll, manage)."""
