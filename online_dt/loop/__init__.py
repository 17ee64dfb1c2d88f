"""The online loop: target schedules, scoring with retries, worker handles and the loop itself."""
