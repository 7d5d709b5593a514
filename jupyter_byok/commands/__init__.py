"""Operations shared by every front end: each returns plain data, never prints.

The CLI renders the data as text; ``%byok`` renders it with ``display``. Keeping the work
here means the terminal and the notebook cannot drift apart.
"""
