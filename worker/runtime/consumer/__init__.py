"""jobrunner's consumer bootsteps, one concern per module, in the style of Celery's own
`celery.worker.consumer` package. They run in each worker's main process, in Celery's event
loop; the app factory adds them to every worker (`CONSUMER_STEPS` in worker/app.py).

Several workers doing the same periodic work is safe: lease renewal is per worker, and failing
a job or promoting a message is atomic in Redis.
"""
