"""Notebook tooling on top of the core: parameters and profiles (config), the papermill runner (run), the results
schema (results), figures (plots), rows / tables / paired comparisons / two-stage runs (study) and step timing
(benchmark). It imports the core, never a paper."""
