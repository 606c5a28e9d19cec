"""The page and the pinned npm package of tinygate.browser (data files, no code)."""
