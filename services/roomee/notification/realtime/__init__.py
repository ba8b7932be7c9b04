"""Parts of the notification target's Socket.IO server that have a concern of their own."""
