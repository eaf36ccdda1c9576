"""`genome-index serve`: the store behind HTTP. The app and its lifecycle (`app`), one router
per concern (`routes`), request schemas built from `QueryOptions` (`schemas`), bounds on what a
request may ask (`limits`) and who may ask (`auth`)."""
