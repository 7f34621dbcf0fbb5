"""The paper's human side-by-side study as a tool: pairs of videos from the same prompt, votes
Good / Same / Bad kept in SQLite, a browser page for raters, an automatic rater, and the report."""
