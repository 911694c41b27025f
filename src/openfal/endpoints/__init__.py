"""The endpoint catalog: fal endpoint ids, their input/output schemas and defaults."""
