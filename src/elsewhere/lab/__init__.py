"""The censor lab (DESIGN.md §5): namespaces built by `topology`, sites and DNS in `sites`, the
censor in `censor` with its `techniques`, the `prober`, the real `peers`, and the survival
`matrix` that runs every `transport` against every technique. See docs/lab.md."""
