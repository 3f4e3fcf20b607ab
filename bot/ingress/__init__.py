"""The way in: the webhook endpoints and their checks (size, authentication, content type,
shape), and admission: the dedupe and the durable append to the partition's inbox, done
before the webhook is answered."""
