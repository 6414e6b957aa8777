"""The SOP lifecycle: what changed between two versions of a definition (`diff`), trials that start new
cases on several versions side by side and the adoption that ends them (`trials`), and the migration of
running cases from one version to another (`plan`, `migrate`)."""
