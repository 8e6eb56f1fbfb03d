import React from 'react'
