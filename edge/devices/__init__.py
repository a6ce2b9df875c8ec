"""Device protocols and their back ends; hardware libraries are imported only inside their back end."""
